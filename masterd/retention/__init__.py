"""
What the farm keeps, and for how long (docs/retention.md): retention of logs
and finished jobs (service), and archives of finished jobs (archive).
"""
