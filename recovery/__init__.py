"""Recovery of stuck work: the stuck-work sweeper (:mod:`recovery.sweeper`), the bounds of each
chunk stage (:mod:`recovery.bounds`) and its alerts (:mod:`recovery.alerts`). The admin
routes and CLI that drive it live in ``gateway/admin_recovery.py`` and
``gateway/cli_recovery.py``."""
