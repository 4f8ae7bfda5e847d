import sys

from perfmamba.cli import main

sys.exit(main())
