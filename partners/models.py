# Partners, stores, POS terminals and API keys arrive with the POS API issue.
