"""The consistbench leaderboard: submission format (:mod:`leaderboard.schema`), validation by
rescoring (:mod:`leaderboard.validate`), the static site (:mod:`leaderboard.site`) and the
``consistbench leaderboard`` commands (:mod:`leaderboard.cli`). See ``docs/LEADERBOARD.md``."""
