"""Ray work: the search job and its clips, the index-job driver, the supervisor, notifications."""
