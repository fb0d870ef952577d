from gradsweep.service.client.cli import app

app(prog_name="gradsweep")
