"""`python -m granite_asr …` is the `granite-asr` command (see `granite_asr.cli`)."""

import sys

from .cli import main

sys.exit(main())
