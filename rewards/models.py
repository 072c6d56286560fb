# The rewards catalog, vouchers and donations arrive with the rewards issue.
