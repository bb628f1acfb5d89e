"""Storage: files and directories published atomically, and the converted-directory format built on them."""
