from gradsweep.service.cli import app

app(prog_name="gradsweep")
