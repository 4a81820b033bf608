def test_health_is_public(client):
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_models_need_a_key(client, auth):
    assert client.get("/v1/models").status_code == 401
    names = [m["name"] for m in client.get("/v1/models", headers=auth).get_json()["models"]]
    assert names == ["clinical", "loan"]
