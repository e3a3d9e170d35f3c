from tests.operator.helpers import model
def test_debug(k8s, operator):
    k8s.apply(model())
    k8s.wait_phase("LitGPTModel", "pythia", "Ready")
    operator.stop()
    out = operator.output
    print("OUTPUT-LEN", len(out), "HAS-CREATION", "Creation is processed" in out)
