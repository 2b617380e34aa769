# The same version as masterd's (masterd/_version.py): the two distributions
# are released together, and masterd depends on exactly this one. A test
# (tests/test_client_dist.py) fails when the two differ.
__version__ = "0.1.0"
