"""Storage: files and directories published atomically, the converted-directory format built on them, and the run
record (``run.json``) that lets a resumable command continue only the same run."""
