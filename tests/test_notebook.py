"""The example notebook runs end to end on the tiny preset (random weights)."""

from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_executes_and_draws(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.delenv("MEDREGA_MODEL", raising=False)  # the tiny preset, not a trained model
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is ipykernel's own spec: the kernel runs this interpreter, so this environment
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 6  # ground truth, detect, identify, grounded report, DICOM, two images
    printed = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "model loaded from" in printed and "true change:" in printed
