"""Model quality: realized and estimated metrics (``metrics``), the window read with its labels
and the stored results (``store``), and the report section (``report``)."""
