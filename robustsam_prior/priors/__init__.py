"""Built-in priors, registered in :data:`robustsam_prior.prior.PRIORS` when their module is imported.

Use :func:`robustsam_prior.prior.build_prior`; it imports these modules on first use.
"""
