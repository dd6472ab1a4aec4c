from diffusion4d.cli import main

raise SystemExit(main())
