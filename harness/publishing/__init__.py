"""What the store's results become: leaderboards (Markdown, CSV, LaTeX, HTML) and a paper's
tables beside its published numbers."""
