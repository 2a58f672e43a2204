"""Many runs at once: gathering results, copying run folders, sweeps (issue 15)."""
