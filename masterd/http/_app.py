"""
The one Klein application of the master, shared by the route modules: each
defines a mixin whose routes register here, and L{MasterAPI} combines them.
"""

from ._klein import RoutedKlein

app = RoutedKlein()

#: werkzeug's converter for a database id (a PostgreSQL bigint).
ID = "int(max=9223372036854775807)"
