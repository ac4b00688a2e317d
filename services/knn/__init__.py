"""The knn service (UserCF, ItemCF): ``services.knn.knn_deploy:app``."""
