from lungct.cli import main

raise SystemExit(main())
