from tutti.cli import main

raise SystemExit(main())
