# shellcheck shell=bash
# Sourced by the bench scripts that run the seed's own config (bench/train/seed.sh,
# bench/serve/load.sh); not run on its own.
#
# seed_data PB ROOT: in the current directory, data/ with 508,146 synthetic rows, a
# quarter in test.csv (the original's 381,109 training rows), and config.yml: the
# seed's config as it is (SEED_CONFIG, default: the shared folder beside the repo at
# ROOT) but for where the model goes; without it, the same settings written here.
seed_data() {
  local pb=$1 root=$2
  local seed_config=${SEED_CONFIG:-$root/../shared/data/seed-config.yml}
  "$pb" data synth --rows 508146 --test-fraction 0.25 --seed 11 --out data >/dev/null 2>&1
  if [ -f "$seed_config" ]; then
    sed 's#store_path: models/#store_path: out/#' "$seed_config" >config.yml
  else
    printf '%s\n' 'data:' '  train_path: data/train.csv' '  test_path: data/test.csv' \
      'train:' '  test_size: 0.2' '  random_state: 42' '  shuffle: true' \
      'model:' '  name: GradientBoostingClassifier' '  params:' '    max_depth: null' \
      '    n_estimators: 10' '  store_path: out/' >config.yml
  fi
}
