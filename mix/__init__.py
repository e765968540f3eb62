"""The mix: ``tutti mix`` turns a take folder into one choir recording, stems and DAW projects.

- :mod:`~tutti.mix.command`: the command line, its options, and the pipeline as a whole;
- :mod:`~tutti.mix.folder`: checking the take folder (take.json and every file it names);
- :mod:`~tutti.mix.inputs`: what is mixed, with the singers' gains, mutes and pans;
- :mod:`~tutti.mix.passes`: the typed plan and the passes over it;
- :mod:`~tutti.mix.decode`, :mod:`~tutti.mix.read`: decoding, resampling and measuring;
- :mod:`~tutti.mix.dedrift`: clock drift and input gaps of each recording;
- :mod:`~tutti.mix.scratch`: raw scratch audio on disk; :mod:`~tutti.mix.outputs`: where
  the outputs go, all or nothing;
- :mod:`~tutti.mix.report`: progress and the singers' table.

The signal processing itself is pure and lives in :mod:`tutti.audio` (:mod:`~tutti.audio.mixdown`).
"""

import os

# The mix runs its own threads (--jobs); OpenBLAS's pool on top of them made the bleed fit's
# small solves several times slower on a busy machine (docs/audio.md, "Bleed").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
