"""Multi-label pieces shared by CCD (task B) and CSA (task C), one concept per module."""
