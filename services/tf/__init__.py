"""The tf service (WideDeep, FM, DeepFM, YouTubeRanking, AutoInt, DIN):
``services.tf.tf_deploy:app``."""
