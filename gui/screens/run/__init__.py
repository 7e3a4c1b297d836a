"""The Run screen: the background run's progress, live plots, log and result table."""
