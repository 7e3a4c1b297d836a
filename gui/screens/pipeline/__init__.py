"""The Pipeline screen: switch techniques on, set their parameters and data, see the estimate."""
