"""The commands (ijepa-export, ijepa-embed, ijepa-index, ijepa-bench): thin click layers over library
calls a Python user can make too. Nothing below imports this package."""
