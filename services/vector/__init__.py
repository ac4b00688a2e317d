"""The vector service (SVD, SVD++, ALS, BPR, YouTubeMatch): ``services.vector.vector_deploy``."""
