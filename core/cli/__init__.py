"""The command line ``compression-studio-cli``: the same jobs as the app, as progress bars and one-line errors."""
