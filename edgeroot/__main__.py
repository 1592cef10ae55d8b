from edgeroot.cli import main

raise SystemExit(main())
