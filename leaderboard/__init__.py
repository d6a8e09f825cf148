"""The consistbench leaderboard: submission format (:mod:`consistbench.leaderboard.schema`), validation by
rescoring (:mod:`consistbench.leaderboard.validate`), reproduction (:mod:`consistbench.leaderboard.reproduce`),
the static site (:mod:`consistbench.leaderboard.site`) and the ``consistbench leaderboard`` commands
(:mod:`consistbench.leaderboard.cli`). See ``docs/LEADERBOARD.md``; the layers are in ``pyproject.toml``."""
