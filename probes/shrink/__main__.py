import sys

from probes.shrink.cli import main

sys.exit(main())
