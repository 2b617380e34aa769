"""
Schema migrations: ordered C{NNNN_name.sql} files, applied once each.
"""
