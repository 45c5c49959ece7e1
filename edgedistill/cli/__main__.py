from edgedistill.cli import app

app()
