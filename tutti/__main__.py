from tutti.cli import entry

entry()
