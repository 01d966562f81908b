"""Recovery of stuck work (to come): the stuck-conversation sweeper with alerts and the
admin recovery API that re-drives conversations left half-processed."""
