"""Writing results: atomic saves, where an output may go, and the formats other tools read.

``output_rules`` decides what an output may replace; ``saving`` writes a run's folder atomically (with
``save_dtype`` choosing the weights' number format); ``export`` copies a result and writes GGUF
(``gguf_export``), the recipe and the HTML report (``report_html``).
"""
