from mcp_bridge.cli import main

raise SystemExit(main())
