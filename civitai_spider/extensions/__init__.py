"""Extensions: field coverage, a live progress display, and the closing summary."""
