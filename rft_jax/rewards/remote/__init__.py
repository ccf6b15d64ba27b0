"""Rewards as HTTP endpoints, in the request/response shape managed RFT services use."""
