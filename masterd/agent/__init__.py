"""
The reference agent: C{twistd -n masterd-agent --master ws://HOST:8080}.
"""
