def test_probe():
    assert True
