"""`litgpt pretrain` on shards in object storage (s3:// against moto on 127.0.0.1)."""

import s3_server
from litgpt_runs import pretrain_config, run_pretrain, train_losses, write_shards

s3 = s3_server.s3  # the fixture


def test_litgpt_pretrain_on_s3_shards_gives_the_losses_of_local_shards(tmp_path, s3):
    write_shards(tmp_path / "data")
    url = f"s3://{s3.new_bucket()}/run"
    s3.upload(tmp_path / "data", url)
    blend = {"literal_weights_str": "main/1:0.5,c1:0.3,m1:0.2"}
    (tmp_path / "local").mkdir()
    (tmp_path / "far").mkdir()
    run_pretrain(pretrain_config(tmp_path / "local", {"data_path": str(tmp_path / "data"), **blend}), cwd=tmp_path)
    far_init = {"data_path": url, "storage_options": s3.options, "cache_dir": str(tmp_path / "cache"), **blend}
    output = run_pretrain(pretrain_config(tmp_path / "far", far_init), cwd=tmp_path)
    assert f"train {url}/train" in output and (tmp_path / "far" / "out" / "final" / "lit_model.pth").is_file()
    assert train_losses(tmp_path / "far" / "out") == train_losses(tmp_path / "local" / "out")
