from cloneus.cli import main

raise SystemExit(main())
