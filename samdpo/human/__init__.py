"""Real human feedback: a browser app to grade or rank the candidates, its decision files, their merge."""
