import sys

from cesaa.cli import main

sys.exit(main())
