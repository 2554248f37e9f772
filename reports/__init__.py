"""Stage 4: HTML reports and the offline demo."""
