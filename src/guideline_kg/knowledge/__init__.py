"""The guideline's knowledge: the merged graph, its statements and its treatment algorithm."""
