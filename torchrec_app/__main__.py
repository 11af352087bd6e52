"""``python -m torchrec_app`` is ``torchrec-app``."""

import sys

from torchrec_app.cli import main

sys.exit(main())
