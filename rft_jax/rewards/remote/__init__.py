"""Rewards behind the managed RFT services' reward interface: an HTTP endpoint (server.py, client.py) or an
AWS Lambda handler (lambda_handler.py), both speaking the request/response shape of protocol.py."""
