"""Pure DSP on float32 (frames, channels) arrays: no files, sockets or devices."""
