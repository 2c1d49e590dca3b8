"""Test-suite root. Patching happens here first, exactly as the CLI does it."""
from fiberapp.runtime.patch import patch_all

patch_all()
