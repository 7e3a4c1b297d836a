"""The Export screen: copy the result, write GGUF, save the recipe and the HTML report."""
